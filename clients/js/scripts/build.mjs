// Builds the SDK with esbuild:
//   dist/ferry.min.js  the single-file browser bundle (ESM, minified), committed and served
//                      by the hub at /sdk/ferry.js
//   dist/index.js      the package entry (ESM, readable)
//   dist/react.js      the React hooks (`@ferry/client/react`; react stays an import)
// Usage: node scripts/build.mjs [--outdir DIR] [--size]
//   --outdir DIR  write there instead of dist/ (the up-to-date check builds into a temp dir)
//   --size        print the bundle's minified and gzipped sizes
import { readFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const outIndex = args.indexOf("--outdir");
const outdir = outIndex >= 0 ? resolve(args[outIndex + 1]) : join(root, "dist");
const { name, version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const sourceVersion = /VERSION = "([^"]+)"/.exec(readFileSync(join(root, "src/index.ts"), "utf8"))?.[1];
if (sourceVersion !== version) {
  console.error(`src/index.ts says VERSION ${sourceVersion}, package.json ${version}: make them agree`);
  process.exit(1);
}
mkdirSync(outdir, { recursive: true });

const common = {
  absWorkingDir: root,
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "neutral",
  legalComments: "none",
  logLevel: "warning",
  charset: "utf8",
};
await build({
  ...common,
  entryPoints: ["src/index.ts"],
  outfile: join(outdir, "ferry.min.js"),
  minify: true,
  banner: { js: `/*! ${name} ${version} | ferry.js | MIT OR Apache-2.0 */` },
});
await build({ ...common, entryPoints: ["src/index.ts"], outfile: join(outdir, "index.js") });
await build({ ...common, entryPoints: ["src/react.ts"], outfile: join(outdir, "react.js"), external: ["react"] });

if (args.includes("--size")) {
  const bundle = readFileSync(join(outdir, "ferry.min.js"));
  const gz = gzipSync(bundle, { level: 9 }).length;
  console.log(`ferry.min.js: ${bundle.length} bytes minified, ${gz} bytes gzipped (budget 12288)`);
  if (gz > 12 * 1024) process.exit(1);
}
