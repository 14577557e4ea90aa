// The wrangler configuration files, read by the tools that must agree with a deploy (the test
// launcher, publish.mjs). JSONC: comments and trailing commas are allowed.

import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const DEFAULT_SITE = path.resolve(HERE, "..", "..", "site");

/** JSON with // and block comments and trailing commas → value. */
export function parseJsonc(text) {
  let out = "";
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i];
    if (char === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j;
    } else if (char === "/" && text[i + 1] === "/") {
      while (i < text.length && text[i] !== "\n") i += 1;
      out += "\n";
    } else if (char === "/" && text[i + 1] === "*") {
      i = text.indexOf("*/", i + 2);
      if (i < 0) throw new SyntaxError("unterminated comment");
      i += 1;
    } else {
      out += char;
    }
  }
  return JSON.parse(out.replace(/,(\s*[}\]])/g, "$1"));
}

export function readWrangler(name) {
  const file = path.join(HERE, name);
  return { file, config: parseJsonc(readFileSync(file, "utf8")) };
}
