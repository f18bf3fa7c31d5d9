"""Phonon fine-tuning (PFT): losses, column samplers, batching, co-training, trainer."""
