// Compiles solc standard JSON from stdin with the solc-js in the checkout's node_modules
// (installed by bin/setup from package-lock.json) and writes solc's output JSON to stdout.
// Called by contracts/build.py; argv[2] may name another solc-js directory.
"use strict";
const path = require("path");
const fs = require("fs");

const solcDir = process.argv[2] || path.join(__dirname, "..", "node_modules", "solc");
const solc = require(solcDir);
const input = fs.readFileSync(0, "utf8");
// No import callback: build.py passes every source, so an unresolved import is an error.
const output = JSON.parse(solc.compile(input));
output.compilerVersion = solc.version();
process.stdout.write(JSON.stringify(output));
