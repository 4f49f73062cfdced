"""Public pretrained checkpoints into mmjax: Hugging Face folders and open_clip state
dicts (safetensors only; mmjax never unpickles), mapped tensor by tensor onto the one
model definition, with the architecture options they need."""
