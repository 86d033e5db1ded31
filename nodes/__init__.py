"""ComfyUI side of the pack: V3 nodes and the adapters that put ``nasa_core`` into the host's patch points.
The only package of the pack that imports ComfyUI."""
