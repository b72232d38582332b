"""Text: the shipped public-domain corpus, its tokenizer, the evaluation and calibration sets
(the papers' wikitext2/ptb/c4 on the Hub), random windows, and the manifest of data/."""
