// The npm etcd3 client (gRPC) put through the cases that decided Berth's etcd client (docs/cluster.md).
// Not a dependency: install it aside and point at it:
//   mkdir /tmp/etcd3-eval && (cd /tmp/etcd3-eval && npm init -y && npm i etcd3@1.1.2)
//   node_modules/.bin/esbuild scripts/eval-etcd3.ts --bundle --platform=node --format=esm --outfile=/tmp/eval-etcd3.mjs \
//     --banner:js="import{createRequire as r}from'module';const require=r(import.meta.url);" &&
//   ETCD3_DIR=/tmp/etcd3-eval node /tmp/eval-etcd3.mjs
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { EtcdCluster } from "../test/helpers/etcd";

const dir = process.env.ETCD3_DIR;
if (!dir) throw new Error("set ETCD3_DIR to a directory where etcd3 is installed");
const req = createRequire(join(dir, "package.json"));
interface Watcher {
  on(ev: string, fn: (e: Error) => void): void;
}
interface Etcd3Client {
  watch(): { prefix(p: string): { create(): Promise<Watcher> } };
  put(k: string): { value(v: string): { exec(): Promise<unknown> } };
  close(): void;
}
const { Etcd3 } = req("etcd3") as { Etcd3: new (o: { hosts: string[]; dialTimeout?: number }) => Etcd3Client };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// 1. An esbuild bundle of etcd3, run from elsewhere (how ipamd ships).
const bundleDir = mkdtempSync(join(tmpdir(), "etcd3-bundle-"));
writeFileSync(
  join(bundleDir, "entry.cjs"),
  `const { Etcd3 } = require(${JSON.stringify(req.resolve("etcd3"))}); console.log(typeof Etcd3);`,
);
execFileSync(
  join(process.cwd(), "node_modules/.bin/esbuild"),
  [join(bundleDir, "entry.cjs"), "--bundle", "--platform=node", `--outfile=${join(bundleDir, "out", "bundle.cjs")}`],
  { stdio: "pipe" },
);
try {
  execFileSync("node", [join(bundleDir, "out", "bundle.cjs")], { stdio: "pipe" });
  console.log("bundle: loads");
} catch (e) {
  console.log(`bundle: FAILS at load: ${((e as { stderr: Buffer }).stderr.toString().match(/Error: .*/) ?? ["?"])[0]}`);
}

const etcd = await EtcdCluster.start();
try {
  // 2. Watch on a member that loses its leader.
  const survivor = new Etcd3({ hosts: [etcd.members[1]!.clientUrl] });
  let ended = "";
  const w = await survivor.watch().prefix("/e/").create();
  w.on("error", (e: Error) => {
    ended = `error: ${e.message}`;
  });
  w.on("end", () => {
    ended ||= "end";
  });
  await Promise.all([0, 2].map((i) => etcd.stop(i)));
  await sleep(10_000);
  console.log(`watch on a member without leader, after 10 s: ${ended || "SILENT (no error, no end)"}`);

  // 3. 2 of 3 down: a put through all endpoints.
  const all = new Etcd3({ hosts: etcd.endpoints, dialTimeout: 2000 });
  const t0 = performance.now();
  const err = await all
    .put("/e/x")
    .value("1")
    .exec()
    .then(
      () => null,
      (e: Error) => e,
    );
  console.log(
    `put with 2 of 3 down: ${err ? `${err.constructor.name}: ${err.message}` : "ok?"} after ${Math.round(performance.now() - t0)} ms`,
  );
  survivor.close();
  all.close();
} finally {
  await etcd.destroy();
}
