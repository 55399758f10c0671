"""Logic nodes with wildcard types, in the style of theUpsider/ComfyUI-Logic (a stand-in, see README.md)."""

import operator

import nodes  # ComfyUI's module (absolute import), not this file

OPS = {"a == b": operator.eq, "a != b": operator.ne, "a < b": operator.lt, "a > b": operator.gt,
       "a <= b": operator.le, "a >= b": operator.ge}


class AnyType(str):
    """Equal to every type name: links of any type are accepted."""

    def __eq__(self, _):
        return True

    def __ne__(self, _):
        return False


ANY = AnyType("*")


class LogicInt:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("INT",)
    FUNCTION = "execute"
    CATEGORY = "Logic"

    def execute(self, value):
        return (value,)


class LogicString:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"default": "", "multiline": True})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = "Logic"

    def execute(self, value=""):
        return (value,)


class LogicCompare:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": (ANY, {"default": 0}), "b": (ANY, {"default": 0}),
                             "comparison": (list(OPS), {"default": "a == b"})}}

    RETURN_TYPES = ("BOOLEAN",)
    RETURN_NAMES = "BOOLEAN"  # a bare string, as the original has it
    FUNCTION = "compare"
    CATEGORY = "Logic"

    def compare(self, a, b, comparison):
        return (OPS[comparison](a, b),)


class LogicIf:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ANY": (ANY,), "IF_TRUE": (ANY,), "IF_FALSE": (ANY,)}}

    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("?",)
    FUNCTION = "pick"
    CATEGORY = "Logic"

    def pick(self, ANY, IF_TRUE, IF_FALSE):
        return (IF_TRUE if ANY else IF_FALSE,)


class LogicRunNode:
    """Chooses a node class from the global table and runs it (classic classes with a no-argument call)."""

    @classmethod
    def INPUT_TYPES(cls):
        names = list(nodes.NODE_CLASS_MAPPINGS.keys())
        return {"required": {"ANY": (ANY,), "NODE_TRUE": (names, {"default": names[0]}),
                             "NODE_FALSE": (names, {"default": names[0]})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "execute"
    CATEGORY = "Logic"

    def execute(self, ANY, NODE_TRUE, NODE_FALSE):
        chosen = nodes.NODE_CLASS_MAPPINGS[NODE_TRUE if ANY else NODE_FALSE]()
        return {"ui": {"ran": [chosen.execute()[0]]}}


class LogicDebug:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ANY": (AnyType({}),)}}  # the type's text is "{}"

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "log_input"
    CATEGORY = "Logic"

    def log_input(self, ANY):
        return {"ui": {"text": [repr(ANY)]}}


NODE_CLASS_MAPPINGS = {
    "Compare-L": LogicCompare, "Int-L": LogicInt, "String-L": LogicString,
    "If ANY return A else B-L": LogicIf,
    "DebugPrint-L": LogicDebug,
    "If ANY return A else B-L": LogicRunNode,  # noqa: F601  (the key is repeated: the last one wins)
    "If-L": LogicIf,
}
NODE_DISPLAY_NAME_MAPPINGS = {"Compare-L": "Compare", "Int-L": "Int", "If-L": "If ANY return A else B"}
