"""Shows text on the node and stores it in the workflow (INPUT_IS_LIST: hidden values come as lists)."""


class ShowTextLike:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})},
                "hidden": {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("STRING",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_NODE = True
    FUNCTION = "notify"
    CATEGORY = "utils"

    def notify(self, text, unique_id=None, extra_pnginfo=None):
        if unique_id and extra_pnginfo and "workflow" in extra_pnginfo[0]:
            for node in extra_pnginfo[0]["workflow"]["nodes"]:
                if str(node["id"]) == unique_id[0]:
                    node["widgets_values"] = [text]
        return {"ui": {"text": text}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"ShowText|like": ShowTextLike}
NODE_DISPLAY_NAME_MAPPINGS = {"ShowText|like": "Show Text"}
