from peakllm.core.reference import paper_numbers


def test_sparsegpt_table1_opt125m_is_transcribed():
    rows = {e["method"]: e["value"] for e in paper_numbers(model="facebook/opt-125m", dataset="wikitext2",
                                                          metric="perplexity", where="Table 1")}
    assert rows == {"dense": 27.66, "magnitude": 193, "sparsegpt": 36.85}


def test_every_entry_names_its_source():
    for e in paper_numbers():
        assert e["paper"] and e["where"] and e["metric"] and e["unit"]
