// `bun test/helpers/fileio-probe-main.ts DIR`: the outcomes of fileio-probe.ts under bun:ffi, as JSON.
import { probe } from "./fileio-probe";

console.log(JSON.stringify(await probe(process.argv[2]!)));
