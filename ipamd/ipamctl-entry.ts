// Stand-alone ipamctl executable (bun build --compile ipamd/ipamctl-entry.ts).
import { main } from "./ipamctl";

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e: unknown) => {
  process.stderr.write(`ipamctl: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
