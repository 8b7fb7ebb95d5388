// The names an attachment is keyed by, with one set of rules for the plugins (CNI_CONTAINERID,
// CNI_IFNAME, the network config's name) and for ipamd's API: a name one side accepts, the
// other accepts too. Each check returns why a name is refused, or undefined when it is fine.

/** CNI_CONTAINERID: libcni's pattern, at most 256 characters (ipamd stores no longer key). */
const CONTAINER_ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const CONTAINER_ID_MAX = 256;
/** A network's name: libcni's pattern (so no NUL, '/' or spaces), at most 253 characters. */
const NETWORK_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const NETWORK_NAME_MAX = 253;
/** Linux dev_valid_name: 1-15 bytes, not "." or "..", no '/', ':', whitespace or NUL. */
const IFNAME_MAX_BYTES = 15;

export function containerIdProblem(id: string): string | undefined {
  if (id === "") return "is empty";
  if (id.length > CONTAINER_ID_MAX) return `is too long (${id.length} characters, at most ${CONTAINER_ID_MAX})`;
  if (!CONTAINER_ID_PATTERN.test(id))
    return "has invalid characters (it must start with a letter or digit and contain only letters, digits, '_', '.' and '-')";
  return undefined;
}

export function ifNameProblem(name: string): string | undefined {
  if (name === "") return "is empty";
  const bytes = Buffer.byteLength(name);
  if (bytes > IFNAME_MAX_BYTES) return `is too long (${bytes} bytes, max ${IFNAME_MAX_BYTES})`;
  if (name === "." || name === "..") return "is not a valid interface name";
  if (/[/:\s\0]/.test(name)) return "contains '/', ':', whitespace or NUL";
  return undefined;
}

export function networkNameProblem(name: string): string | undefined {
  if (name === "") return "is empty";
  if (name.length > NETWORK_NAME_MAX) return `is too long (${name.length} characters, at most ${NETWORK_NAME_MAX})`;
  if (!NETWORK_NAME_PATTERN.test(name))
    return "has invalid characters (it must start with a letter or digit and contain only letters, digits, '_', '.' and '-')";
  return undefined;
}
