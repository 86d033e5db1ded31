"""NASA (Negative-Away Steer Attention) node pack for ComfyUI.

Only the V3 entry point lives here, and it imports the nodes lazily, so that this file can be imported without
ComfyUI (pytest imports it; so do tools that read the pack).
"""

# The frontend shows web/docs/<NodeId>.md in its node help panel.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes.extension import NASAExtension

    return NASAExtension()
