// Live loss curve for trainer nodes: plots the `loss` value carried by the node's progress messages
// while it runs, then the full `loss` list from its ui output when it finishes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { el, onExecuted, setNodeWidget } from "./dom.js";

const series = new Map();   // node id -> losses of the current run (per page, not module config)

function drawCurve(canvas, losses) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#1e1e24";
  ctx.fillRect(0, 0, width, height);
  if (losses.length < 2) return;
  const lo = Math.min(...losses), hi = Math.max(...losses), span = hi - lo || 1;
  ctx.strokeStyle = "#f0a020";
  ctx.beginPath();
  losses.forEach((loss, i) => {
    const x = (i / (losses.length - 1)) * (width - 8) + 4;
    const y = height - 4 - ((loss - lo) / span) * (height - 8);
    i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#ddd";
  ctx.font = "10px monospace";
  ctx.fillText(`loss ${losses.at(-1).toPrecision(4)}  (${losses.length} steps)`, 6, 12);
}

function show(node, losses) {
  const canvas = el("canvas", { width: "100%", height: "100px" });
  canvas.width = 280;
  canvas.height = 100;
  canvas.className = "fewstep-loss-curve";
  canvas.dataset.points = String(losses.length);
  drawCurve(canvas, losses);
  const wrapper = el("div");
  wrapper.append(canvas);
  setNodeWidget(node, "loss_curve", wrapper, 110);
}

function nodeById(id) {
  return app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id);
}

api.addEventListener("execution_start", () => series.clear());
api.addEventListener("progress", ({ detail }) => {
  const loss = Number(detail?.loss ?? detail?.extra?.loss);
  if (!detail || !Number.isFinite(loss)) return;
  const losses = series.get(detail.node) ?? [];
  losses.push(loss);
  series.set(detail.node, losses);
  const node = nodeById(detail.node);
  if (node) show(node, losses);
});

app.registerExtension({
  name: "fewstep.LossCurve",
  async beforeRegisterNodeDef(nodeType) {
    onExecuted(nodeType, (node, message) => {
      if (Array.isArray(message.loss) && message.loss.length) show(node, message.loss.map(Number));
    });
  },
});
