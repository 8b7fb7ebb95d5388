// Entry of the TEST build of berth-sriov (compiled by fakePfSriovPath in plugins.ts, like
// sriov-cni's separate fake binary): the shipped plugin with its PF-side operations recorded under
// $BERTH_SRIOV_FAKE_PF instead of sent to a kernel without SR-IOV. The shipped dist/bin/berth has
// no such seam.
import { sriovPluginWith } from "../../cni/plugins/sriov";
import { pluginMain } from "../../cni/skel/dispatch";
import { RecordingPfOps } from "./fake-pf";

void pluginMain(async () =>
  sriovPluginWith((nl, log) => {
    const dir = process.env.BERTH_SRIOV_FAKE_PF;
    if (!dir) throw new Error("the fake-PF test build of berth-sriov needs BERTH_SRIOV_FAKE_PF=<dir>");
    log.warn("test build: PF-side VF settings are recorded, not sent to the kernel", { dir });
    return new RecordingPfOps(dir, nl);
  }),
);
