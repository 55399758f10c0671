// FLOAT widgets show their whole value: a learning rate of 0.0001 reads 0.0001, not 0.
//
// Editor 1.58.1 shows a FLOAT widget with as many decimals as its `step` has (step 0.01 -> 2 decimals), and
// its node-search preview card ignores the input's options altogether: it formats numbers with the
// browser's default of at most 3 decimals, so every trainer's `learning_rate` (1e-4) read 0 there.
// ComfyUI's own nodes declare the same options (KarrasScheduler: sigma_min 0.0291675 at step 0.01 reads
// 0.03), so this is fixed here, in the editor, for every node:
//   * node widgets: when the default needs more decimals than the step gives (up to MAX_DECIMALS), the
//     widget shows that many, and its automatic rounding (10^-decimals) follows, so editing keeps them;
//   * the search preview card: a number input whose text reads another number than its value
//     (aria-valuenow) shows the value itself.
// tests/engine/test_float_widgets.py checks every registered FLOAT default against this rule;
// tests/browser/test_float_display.py checks it in the editor.
import { app } from "../../scripts/app.js";

export const MAX_DECIMALS = 8;

// Decimals needed to write `value` exactly (0.0291675 -> 7), or null beyond MAX_DECIMALS.
export function decimalsNeeded(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return null;
  for (let decimals = 0; decimals <= MAX_DECIMALS; decimals++) {
    if (Number(value.toFixed(decimals)) === value) return decimals;
  }
  return null;
}

function widenWidget(widget, defaultValue) {
  const options = widget.options ?? {};
  const shown = options.precision ?? 3;
  const needed = decimalsNeeded(defaultValue);
  if (needed === null || needed <= shown) return;
  const autoRound = options.round === 10 ** -shown;   // the editor's rounding, not the node's own `round`
  options.precision = needed;
  if (autoRound) options.round = 10 ** -needed;
}

function widenFloatWidgets(node, nodeData) {
  const specs = { ...(nodeData?.input?.required ?? {}), ...(nodeData?.input?.optional ?? {}) };
  for (const widget of node.widgets ?? []) {
    const spec = specs[widget.name];
    if (Array.isArray(spec) && spec[0] === "FLOAT") widenWidget(widget, spec[1]?.default);
  }
}

// The preview card (LGraphNodePreview) renders its own inputs; its root's data-node-id is "preview-<type>".
function fixPreviewInputs(root) {
  for (const input of root.querySelectorAll("input[role='spinbutton'][aria-valuenow]")) {
    if (!input.closest("[data-node-id^='preview-']")) continue;
    const value = Number(input.getAttribute("aria-valuenow"));
    const shown = Number(String(input.value).replaceAll(",", ""));
    if (Number.isFinite(value) && shown !== value) input.value = String(value);
  }
}

function watchPreviews() {
  const observer = new MutationObserver((mutations) => {
    for (const mutation of mutations) {
      for (const added of mutation.addedNodes) {
        if (added instanceof Element) fixPreviewInputs(added);
      }
    }
  });
  observer.observe(document.body, { childList: true, subtree: true });
}

app.registerExtension({
  name: "fewstep.FloatDisplay",
  async setup() {
    watchPreviews();
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      widenFloatWidgets(this, nodeData);
      return result;
    };
  },
});
