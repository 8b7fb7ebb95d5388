// Stand-alone ipamctl executable (the shipped one is the multi-call dist/bin/berth; tests bundle this).
import { main } from "./cli";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`ipamctl: ${(e as Error).message}\n`);
    process.exitCode = 1;
  },
);
