"""Classic-protocol nodes that reproduce issue #14 items 1-7: the executor must call them exactly as
ComfyUI does. Written like a ComfyUI custom pack (no ComfyUI import, no fewstep import)."""

import asyncio


class AlwaysEqualProxy(str):
    """The wildcard type of many logic/utility packs: equal to every type (ComfyUI accepts any link)."""

    def __eq__(self, _other):
        return True

    def __ne__(self, _other):
        return False

    def __hash__(self):
        return hash(str(self))


any_type = AlwaysEqualProxy("*")
CALLS = []  # (node, kwargs) of every call, for the tests to inspect


class CountingInt:
    """A source whose runs are counted (cached on a second run)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    def run(self, value):
        CALLS.append(("CountingInt", {"value": value}))
        return (value,)


class LazyMix:
    """A mix node: asks for ``b`` only when ``a`` is not zero, then adds (ComfyUI's lazy switch pattern)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"lazy": True, "forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "mix"
    CATEGORY = "compat"

    def check_lazy_status(self, a, b=None):
        return ["b"] if a != 0 and b is None else []

    def mix(self, a, b=None):
        if a != 0 and b is None:
            raise ValueError("LazyMix called without the lazy input it asked for")
        return (a + (b or 0),)


class AsyncLazyMix(LazyMix):
    """``check_lazy_status`` and ``VALIDATE_INPUTS`` as coroutines (awaited by ComfyUI's executor)."""

    async def check_lazy_status(self, a, b=None):
        await asyncio.sleep(0)
        return ["b"] if a != 0 and b is None else []

    @classmethod
    async def VALIDATE_INPUTS(cls, a=None, b=None):
        await asyncio.sleep(0)
        return True


class AsyncRefuses:
    """An async validator that refuses: the graph must be refused with its message."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    @classmethod
    async def VALIDATE_INPUTS(cls, value):
        return True if value >= 0 else "negative values are refused"

    def run(self, value):
        return (value,)


class SumKwargs:
    """Dynamic inputs: sums every linked keyword, declared or not (``**kwargs``)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"base": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "total"
    CATEGORY = "compat"
    OUTPUT_NODE = True

    def total(self, base, **kwargs):
        CALLS.append(("SumKwargs", dict(kwargs)))
        return {"ui": {"total": [base + sum(kwargs.values())]}, "result": (base + sum(kwargs.values()),)}


class Accumulate:
    """A loop/accumulator node: its hidden ``("*",)`` inputs come from the prompt."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1})},
                "hidden": {"accumulated": ("*",), "step": ("INT",), "node": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    def run(self, value, accumulated=None, step=None, node=None):
        CALLS.append(("Accumulate", {"accumulated": accumulated, "step": step, "node": node}))
        return ((accumulated or 0) + value * (step or 0),)


class ShowAny:
    """A wildcard-typed output node (``AlwaysEqualProxy``)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"anything": (any_type, {})}}

    RETURN_TYPES = (any_type,)
    FUNCTION = "show"
    CATEGORY = "compat"
    OUTPUT_NODE = True

    def show(self, anything):
        return {"ui": {"text": [str(anything)]}, "result": (anything,)}


class ShowInt:
    """A plain output node (the tests of items 1-6 use it so that they do not depend on item 7)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    CATEGORY = "compat"
    OUTPUT_NODE = True

    def show(self, value):
        return {"ui": {"text": [str(value)]}}


class OddTypes:
    """Inputs of unusual declared types: a dict and the string ``"{}"``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"thing": ({},), "braces": ("{}",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    def run(self, thing, braces):
        return (len(str(thing)) + len(str(braces)),)


class BracesOut:
    """Produces the ``"{}"`` type."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("{}",)
    FUNCTION = "run"
    CATEGORY = "compat"

    def run(self):
        return ("braces",)


class FailingInner:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "compat"

    def run(self, value):
        raise RuntimeError(f"inner node failed on {value}")


class ExpandToFailure:
    """Returns a subgraph whose second node raises."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 3})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "expand"
    CATEGORY = "compat"

    def expand(self, value):
        graph = {"c": {"class_type": "CountingInt", "inputs": {"value": value}},
                 "f": {"class_type": "FailingInner", "inputs": {"value": ["c", 0]}}}
        return {"result": (["f", 0],), "expand": graph}


NODE_CLASS_MAPPINGS = {
    "CountingInt": CountingInt, "LazyMix": LazyMix,
    "AsyncLazyMix": AsyncLazyMix, "AsyncRefuses": AsyncRefuses, "SumKwargs": SumKwargs,
    "Accumulate": Accumulate, "ShowAny": ShowAny, "ShowInt": ShowInt, "OddTypes": OddTypes, "BracesOut": BracesOut,
    "FailingInner": FailingInner, "ExpandToFailure": ExpandToFailure,
}
