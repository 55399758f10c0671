// Small DOM helpers shared by fewstep's widgets (a plain module; registers no extension).

export function el(tag, style = {}, text = undefined) {
  const node = document.createElement(tag);
  Object.assign(node.style, style);
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// Replace (or create) the DOM widget `name` on `node` with `element`.
export function setNodeWidget(node, name, element, height = 120) {
  const existing = node.widgets?.find((w) => w.name === name);
  if (existing?.element) {
    existing.element.replaceChildren(...element.childNodes);
    return existing;
  }
  const holder = el("div", { width: "100%", overflow: "auto" });
  holder.replaceChildren(...element.childNodes);
  holder.dataset.fewstep = name;
  const widget = node.addDOMWidget(name, "fewstep_" + name, holder, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => height,
  });
  node.setDirtyCanvas?.(true, true);
  return widget;
}

// Chain `fn` after a node type's onExecuted.
export function onExecuted(nodeType, fn) {
  const previous = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    const result = previous?.apply(this, arguments);
    try {
      fn(this, message ?? {});
    } catch (error) {
      console.warn("[fewstep] widget update failed:", error);
    }
    return result;
  };
}

export function viewUrl(api, item) {
  const params = new URLSearchParams({
    filename: item.filename ?? "",
    subfolder: item.subfolder ?? "",
    type: item.type ?? "output",
  });
  return api.apiURL(`/view?${params}`);
}
