"""Model files: the safetensors codec (`codec`) and the header that names a file's layout
(`header`). No pickle anywhere."""
