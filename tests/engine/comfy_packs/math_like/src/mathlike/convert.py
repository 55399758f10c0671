"""Conversions and vectors in the style of ComfyMath (a stand-in, see README.md)."""

VEC2_ZERO = (0.0, 0.0)


class IntToNumber:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0})}}

    RETURN_TYPES = ("NUMBER",)
    FUNCTION = "op"
    CATEGORY = "math/conversion"

    def op(self, a):
        return (a,)


class ComposeVec2:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("FLOAT", {"default": 0.0}), "y": ("FLOAT", {"default": 0.0})}}

    RETURN_TYPES = ("VEC2",)
    FUNCTION = "op"
    CATEGORY = "math/conversion"

    def op(self, x, y):
        return ((x, y),)


class BreakoutVec2:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("VEC2", {"default": VEC2_ZERO})}}

    RETURN_TYPES = ("NUMBER", "NUMBER")
    FUNCTION = "op"
    CATEGORY = "math/conversion"

    def op(self, a):
        return (a[0], a[1])


NODE_CLASS_MAPPINGS = {"ML_IntToNumber": IntToNumber, "ML_ComposeVec2": ComposeVec2,
                       "ML_BreakoutVec2": BreakoutVec2}
