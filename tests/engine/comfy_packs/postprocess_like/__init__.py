from .post_processing.blur import NODE_CLASS_MAPPINGS as _blur
from .post_processing.sepia import NODE_CLASS_MAPPINGS as _sepia

NODE_CLASS_MAPPINGS = {**_blur, **_sepia}
