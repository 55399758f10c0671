// METRICS as a small table on the node: any node whose ui output has `metrics: [{name: value}]`.
import { app } from "../../scripts/app.js";
import { el, onExecuted, setNodeWidget } from "./dom.js";

function format(value) {
  if (typeof value === "number" && !Number.isInteger(value)) return value.toPrecision(5);
  return String(value);
}

export function metricsTable(metrics) {
  const table = el("table", { borderCollapse: "collapse", fontSize: "12px", width: "100%" });
  table.className = "fewstep-metrics";
  for (const [name, value] of Object.entries(metrics)) {
    const row = el("tr");
    row.append(el("td", { padding: "1px 6px", opacity: "0.75" }, name));
    row.append(el("td", { padding: "1px 6px", textAlign: "right", fontFamily: "monospace" }, format(value)));
    table.append(row);
  }
  const wrapper = el("div");
  wrapper.append(table);
  return wrapper;
}

app.registerExtension({
  name: "fewstep.Metrics",
  async beforeRegisterNodeDef(nodeType) {
    onExecuted(nodeType, (node, message) => {
      const metrics = Array.isArray(message.metrics) ? message.metrics.at(-1) : null;
      if (metrics && typeof metrics === "object") {
        setNodeWidget(node, "metrics", metricsTable(metrics), 22 * (Object.keys(metrics).length + 1));
      }
    });
  },
});
