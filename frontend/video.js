// VIDEO previews: a node whose ui output has `video: [{filename, subfolder, type, format?}]` plays it
// on the node (MP4/WebM in a <video>, animated WebP/GIF in an <img>). MESH outputs use the editor's
// own 3D viewer, which it attaches to nodes of class `Preview3D` (ui `result: [path]`).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { el, onExecuted, setNodeWidget, viewUrl } from "./dom.js";

const PLAYABLE = /\.(mp4|webm|mov|mkv)$/i;

export function videoElement(item) {
  const url = viewUrl(api, item);
  const media = PLAYABLE.test(item.filename ?? "")
    ? Object.assign(el("video", { width: "100%" }), { src: url, autoplay: true, loop: true, muted: true, controls: true })
    : Object.assign(el("img", { width: "100%", objectFit: "contain" }), { src: url });
  media.className = "fewstep-video";
  const wrapper = el("div");
  wrapper.append(media);
  return wrapper;
}

app.registerExtension({
  name: "fewstep.VideoPreview",
  async beforeRegisterNodeDef(nodeType) {
    onExecuted(nodeType, (node, message) => {
      const item = Array.isArray(message.video) ? message.video.at(-1) : null;
      if (item?.filename) setNodeWidget(node, "video", videoElement(item), 200);
    });
  },
});
