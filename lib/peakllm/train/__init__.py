"""Training: efficient fine-tuning recipes with exact memory accounting (``recipes``), and
scale-out with torch.distributed, DDP and FSDP under torchrun (``distributed``)."""
