"""lora: LoRA fine-tuning of small on-device speech recognisers."""
__version__ = "0.1.0"
