// Type-checks dashboards against the Dashboard type of @grafana/schema:
//   node typecheck.mjs [DIR]      every DIR/*.json (default: dashboards/); exit 1 on a type error
//
// Each dashboard is written out as a TypeScript object literal assigned to `Dashboard`, then tsc
// --strict checks it. A literal (rather than `import x from "./d.json"`) is what makes the check
// strict: literal types for enum-like strings ("link", "query") and excess-property errors for
// misspelt or misplaced fields, both of which an imported JSON module's widened type escapes.
// The schema declares some fields as TypeScript string enums (ThresholdsMode, FieldColorModeId,
// MappingType), which no JSON string is assignable to; JsonOf<T> turns each such enum into the
// union of its values, so "absolute" passes and "absolut" fails. Everything else is unchanged.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dashboards = resolve(process.argv[2] ?? join(here, "dashboards"));
const out = join(here, ".typecheck");
const header = `import type { Dashboard } from "@grafana/schema";

type JsonOf<T> = T extends string ? \`\${T}\` : T extends object ? { [K in keyof T]: JsonOf<T[K]> } : T;
`;

rmSync(out, { recursive: true, force: true });
mkdirSync(out);
const names = readdirSync(dashboards).filter((n) => n.endsWith(".json"));
if (names.length === 0) {
  console.error(`no dashboards in ${dashboards}`);
  process.exit(1);
}
for (const name of names) {
  const json = JSON.parse(readFileSync(join(dashboards, name), "utf8"));
  const source =
    `// Generated from ${basename(dashboards)}/${name} by typecheck.mjs; do not edit.\n` +
    header +
    `\nexport const dashboard: JsonOf<Dashboard> = ${JSON.stringify(json, null, 2)};\n`;
  writeFileSync(join(out, name.replace(/\.json$/, ".ts")), source);
}
const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
try {
  execFileSync(process.execPath, [tsc, "--project", join(here, "tsconfig.json")], { stdio: "inherit" });
} catch {
  process.exit(1);
}
console.log(`${names.length} dashboard(s) match @grafana/schema's Dashboard type`);
