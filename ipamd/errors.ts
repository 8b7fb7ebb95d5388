// Errors the API returns: {"error":{"code","message","field"?}} with an HTTP status.
import type { ApiErrorBody, ApiErrorCode } from "../api/types";

const STATUS: Record<ApiErrorCode, number> = {
  invalid_request: 400,
  no_pool: 422,
  pool_exhausted: 409,
  ip_unavailable: 409,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  payload_too_large: 413,
  reservation_attached: 409,
  shutting_down: 503,
  internal: 500,
  previous_sandbox_attached: 409,
  database_unverified: 503,
  cluster_unavailable: 503,
  attached_elsewhere: 409,
  l2_domain: 422,
  events_expired: 410,
};

export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.status = STATUS[code];
  }
  toJSON(): ApiErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.field ? { field: this.field } : {}) } };
  }
}

/** A release of reservations refused because running containers use some: `attached` described, the first 5 named. */
export function reservationsAttached(attached: string[]): ApiError {
  return new ApiError(
    "reservation_attached",
    `${attached.length} of these reservations are in use by running containers: ${attached.slice(0, 5).join(", ")}; ` +
      "delete the pods first, or pass force to end the reservations now (an address in use stays held by its container " +
      "until the container's CNI DEL or GC frees it)",
  );
}
