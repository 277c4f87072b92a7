"""Where audio enters: the microphone (``mic``) and sound files (``file``)."""
