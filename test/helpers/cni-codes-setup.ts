// vitest setup file: marks each test file done once its tests ran (see cni-codes.ts).
import { afterAll, expect } from "vitest";
import { markFileDone } from "./cni-codes";

afterAll(() => {
  markFileDone(expect.getState().testPath ?? "");
});
