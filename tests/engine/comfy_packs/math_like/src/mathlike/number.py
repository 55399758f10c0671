"""NUMBER nodes in the style of ComfyMath (a stand-in, see README.md)."""

from .ops import BINARY, CONDITIONS, UNARY

NUMBER = ("NUMBER", {"default": 0.0})


class NumberBinary:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"op": (list(BINARY.keys()),), "a": NUMBER, "b": NUMBER}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "op"
    CATEGORY = "math/number"

    def op(self, op, a, b):
        return (BINARY[op](float(a), float(b)),)


class NumberUnary:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"op": (list(UNARY.keys()),), "a": NUMBER}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "op"
    CATEGORY = "math/number"

    def op(self, op, a):
        return (UNARY[op](float(a)),)


class NumberCondition:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"op": (list(CONDITIONS.keys()),), "a": NUMBER, "b": NUMBER}}

    RETURN_TYPES = ("BOOL",)
    FUNCTION = "op"
    CATEGORY = "math/number"
    OUTPUT_NODE = True

    def op(self, op, a, b):
        result = CONDITIONS[op](float(a), float(b))
        return {"ui": {"result": [result]}, "result": (result,)}


NODE_CLASS_MAPPINGS = {"ML_NumberBinary": NumberBinary, "ML_NumberUnary": NumberUnary,
                       "ML_NumberCondition": NumberCondition}
