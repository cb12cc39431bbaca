// Parse each Mermaid block given on stdin (JSON list of strings) with the real mermaid parser.
import { JSDOM } from "jsdom";
const dom = new JSDOM("<!DOCTYPE html><body></body>", { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
for (const key of ["navigator", "Element", "HTMLElement", "SVGElement", "DOMParser", "getComputedStyle"]) {
  if (!(key in globalThis)) globalThis[key] = dom.window[key];
}
const { default: mermaid } = await import("mermaid");
mermaid.initialize({ startOnLoad: false });
let input = "";
for await (const chunk of process.stdin) input += chunk;
const blocks = JSON.parse(input);
const results = [];
for (const block of blocks) {
  try {
    const parsed = await mermaid.parse(block);
    results.push({ ok: true, type: parsed.diagramType });
  } catch (error) {
    results.push({ ok: false, error: String(error && error.message || error) });
  }
}
console.log(JSON.stringify(results));
