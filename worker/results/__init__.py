"""The result log: written (`sink`), read back for resume (`prior`), and read by every other
reader through one module (`records`)."""
