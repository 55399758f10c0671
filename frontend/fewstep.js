// fewstep's editor extension: open fewstep's default graph on a first visit.
//
// Editor 1.58.1 loads `window.comfyAPI.defaultGraph.defaultGraph` when it starts without a saved
// workflow (and for "Load Default Workflow"). We fill that object, in place, with the server's
// default graph (GET /api/fewstep/default_graph, a UI-format workflow), before the editor opens one.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

async function installDefaultGraph() {
  const response = await api.fetchApi("/fewstep/default_graph", { cache: "no-store" });
  // Without graphs/default the editor's own default (ComfyUI's SD1.5 nodes, which fewstep does not
  // have) would open with a missing-nodes dialog: start from a blank canvas instead.
  const graph = response.status === 200 ? await response.json() : window.comfyAPI?.defaultGraph?.blankGraph;
  const target = window.comfyAPI?.defaultGraph?.defaultGraph;
  if (!target || typeof graph !== "object" || !Array.isArray(graph.nodes)) return false;
  const copy = structuredClone(graph);
  for (const key of Object.keys(target)) delete target[key];
  Object.assign(target, copy);
  return true;
}

app.registerExtension({
  name: "fewstep.DefaultGraph",
  async init() {
    try {
      await installDefaultGraph();
    } catch (error) {
      console.warn("[fewstep] could not install the default graph:", error);
    }
  },
});
