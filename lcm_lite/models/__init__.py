"""What a model is made of, read and run: the model folder and its configs (``folder``,
``configs``), hub downloads (``hub``), the CLIP tokenizer (``tokenizer``), the OpenVINO networks
(``networks``), the full or tiny VAE (``vae``) and LoRA adapters (``lora``)."""
