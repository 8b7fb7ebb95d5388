// The host suite's file order: test/ship/errors-doc.test.ts last (it waits for the others to
// finish and then compares the codes they saw with docs/ERRORS.md), and the run's file list
// written where that test finds it.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BaseSequencer, type TestSpecification } from "vitest/node";

const ERRORS_DOC_TEST = "test/ship/errors-doc.test.ts";

export class CodesLastSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const last = (f: TestSpecification) => f.moduleId.endsWith(ERRORS_DOC_TEST);
    const out = [...sorted.filter((f) => !last(f)), ...sorted.filter(last)];
    const dir = process.env.BERTH_CNI_CODES_DIR;
    if (dir) writeFileSync(join(dir, "files.json"), JSON.stringify(out.map((f) => f.moduleId)));
    return out;
  }
}
