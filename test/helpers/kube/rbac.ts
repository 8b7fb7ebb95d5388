// RBAC as the test API server enforces it: the rules of conf/kubernetes/rbac.yaml that are bound to
// one service account (ClusterRoleBindings everywhere, RoleBindings in their namespace).
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}
interface Grant {
  namespace?: string;
  rules: Rule[];
} // namespace undefined: cluster-wide

interface AccessRequest {
  verb: string;
  group: string;
  resource: string;
  namespace?: string;
  name?: string;
}

export class Rbac {
  private constructor(
    private readonly grants: Grant[],
    readonly user: string,
  ) {}

  /** Loads the bindings of `system:serviceaccount:<namespace>:<name>` from a multi-document RBAC file. */
  static load(file: string, serviceAccount: { namespace: string; name: string }): Rbac {
    type Doc = {
      kind?: string;
      metadata?: { name?: string; namespace?: string };
      rules?: Rule[];
      roleRef?: { kind: string; name: string };
      subjects?: { kind: string; name: string; namespace?: string }[];
    };
    const docs = parseAllDocuments(readFileSync(file, "utf8"))
      .map((d) => d.toJS() as Doc)
      .filter(Boolean);
    const role = (kind: string, name: string, namespace?: string): Rule[] => {
      const found = docs.find(
        (d) => d.kind === kind && d.metadata?.name === name && (kind === "ClusterRole" || d.metadata?.namespace === namespace),
      );
      if (!found) throw new Error(`${file}: a binding refers to ${kind} ${name}, which the file does not define`);
      return found.rules ?? [];
    };
    const grants: Grant[] = [];
    for (const d of docs) {
      if (d.kind !== "ClusterRoleBinding" && d.kind !== "RoleBinding") continue;
      const bound = d.subjects?.some(
        (s) => s.kind === "ServiceAccount" && s.name === serviceAccount.name && s.namespace === serviceAccount.namespace,
      );
      if (!bound || !d.roleRef) continue;
      const namespace = d.kind === "RoleBinding" ? (d.metadata?.namespace ?? "default") : undefined;
      grants.push({ namespace, rules: role(d.roleRef.kind, d.roleRef.name, namespace) });
    }
    return new Rbac(grants, `system:serviceaccount:${serviceAccount.namespace}:${serviceAccount.name}`);
  }

  allows(r: AccessRequest): boolean {
    return this.grants.some(
      (g) =>
        (g.namespace === undefined || g.namespace === r.namespace) &&
        g.rules.some(
          (rule) =>
            has(rule.apiGroups, r.group) &&
            has(rule.resources, r.resource) &&
            has(rule.verbs, r.verb) &&
            (!rule.resourceNames?.length || (r.name !== undefined && rule.resourceNames.includes(r.name))),
        ),
    );
  }
}

function has(list: string[] | undefined, value: string): boolean {
  return (list ?? []).includes(value) || (list ?? []).includes("*");
}
