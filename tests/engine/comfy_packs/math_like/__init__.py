from .src.mathlike import convert, number

NODE_CLASS_MAPPINGS = {**convert.NODE_CLASS_MAPPINGS, **number.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {name: name.removeprefix("ML_") for name in NODE_CLASS_MAPPINGS}
