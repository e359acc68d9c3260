// A client for the portbridge sidecar's BridgeService, speaking the Connect
// protocol with JSON bodies over Node's built-in fetch (unary calls only).
// Field names are the proto's JSON names (lowerCamelCase); the contract is
// proto/portbridge/v1/bridge.proto.

/** The service path prefix of portbridge.v1.BridgeService. */
export const SERVICE_PATH = '/portbridge.v1.BridgeService';

/** A Connect error code, as the protocol spells them in JSON. */
export type ConnectCode =
  | 'canceled'
  | 'unknown'
  | 'invalid_argument'
  | 'deadline_exceeded'
  | 'not_found'
  | 'already_exists'
  | 'permission_denied'
  | 'resource_exhausted'
  | 'failed_precondition'
  | 'aborted'
  | 'out_of_range'
  | 'unimplemented'
  | 'internal'
  | 'unavailable'
  | 'data_loss'
  | 'unauthenticated';

const KNOWN_CODES = new Set<string>([
  'canceled', 'unknown', 'invalid_argument', 'deadline_exceeded', 'not_found',
  'already_exists', 'permission_denied', 'resource_exhausted', 'failed_precondition',
  'aborted', 'out_of_range', 'unimplemented', 'internal', 'unavailable', 'data_loss',
  'unauthenticated',
]);

/** A failed call to the sidecar, with the Connect code it maps to. */
export class SidecarError extends Error {
  constructor(
    readonly code: ConnectCode,
    message: string,
    readonly httpStatus?: number,
  ) {
    super(message);
    this.name = 'SidecarError';
  }
}

/** The answer to PublishChanges. */
export interface PublishResult {
  accepted: number;
  queueDepth: number;
}

/** Settings of a SidecarClient. */
export interface SidecarClientOptions {
  baseUrl: string;
  token?: string;
  requestTimeoutMs: number;
}

/**
 * Calls the sidecar. Request bodies are passed in already serialized, so the
 * caller can measure and bound them without serializing twice.
 */
export class SidecarClient {
  readonly baseUrl: string;
  readonly #token?: string;
  readonly #timeoutMs: number;

  constructor(options: SidecarClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.#token = options.token;
    this.#timeoutMs = options.requestTimeoutMs;
  }

  /** PublishChanges with a serialized PublishChangesRequest. */
  async publishChanges(body: string, signal?: AbortSignal): Promise<PublishResult> {
    const res = await this.#call('PublishChanges', body, signal);
    const accepted = Number(res.accepted ?? 0);
    // uint64 arrives as a JSON string.
    const queueDepth = Number(res.queueDepth ?? 0);
    return { accepted, queueDepth };
  }

  /** TriggerResync, used when a full snapshot has no changes to carry it. */
  async triggerResync(reason: string, signal?: AbortSignal): Promise<string> {
    const res = await this.#call('TriggerResync', JSON.stringify({ reason }), signal);
    return String(res.resyncId ?? '');
  }

  async #call(method: string, body: string, signal?: AbortSignal): Promise<Record<string, unknown>> {
    const url = `${this.baseUrl}${SERVICE_PATH}/${method}`;
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'connect-protocol-version': '1',
    };
    if (this.#token) {
      headers.authorization = `Bearer ${this.#token}`;
    }
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await fetch(url, { method: 'POST', headers, body, signal: combined });
    } catch (e) {
      if (signal?.aborted) {
        throw new SidecarError('canceled', `${method} to ${url} was canceled`);
      }
      if (timeout.aborted) {
        throw new SidecarError('deadline_exceeded', `${method} to ${url} timed out after ${this.#timeoutMs} ms`);
      }
      throw new SidecarError('unavailable', `${method} to ${url} failed: ${describeFetchError(e)}`);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (e) {
      throw new SidecarError('unavailable', `${method} to ${url}: reading the answer failed: ${describeFetchError(e)}`);
    }
    if (response.status === 200) {
      try {
        const parsed: unknown = JSON.parse(text);
        if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
          return parsed as Record<string, unknown>;
        }
      } catch {
        // fall through to the error below
      }
      throw new SidecarError('internal', `${method} to ${url}: answer 200 is not a JSON object: ${truncate(text)}`, 200);
    }
    throw errorFromResponse(method, url, response.status, text);
  }
}

function errorFromResponse(method: string, url: string, status: number, text: string): SidecarError {
  let code: ConnectCode | undefined;
  let message = '';
  try {
    const parsed = JSON.parse(text) as { code?: unknown; message?: unknown };
    if (typeof parsed.code === 'string' && KNOWN_CODES.has(parsed.code)) {
      code = parsed.code as ConnectCode;
      message = typeof parsed.message === 'string' ? parsed.message : '';
    }
  } catch {
    // not a Connect error body; map the HTTP status as the protocol says
  }
  code ??= codeFromHttpStatus(status);
  const detail = message || truncate(text) || `HTTP ${status}`;
  return new SidecarError(code, `${method} to ${url}: ${code}: ${detail}`, status);
}

/** The Connect protocol's mapping of HTTP status to code for bodies that are not Connect errors. */
export function codeFromHttpStatus(status: number): ConnectCode {
  switch (status) {
    case 400:
      return 'internal';
    case 401:
      return 'unauthenticated';
    case 403:
      return 'permission_denied';
    case 404:
      return 'unimplemented';
    case 429:
    case 502:
    case 503:
    case 504:
      return 'unavailable';
    default:
      return 'unknown';
  }
}

function describeFetchError(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    if (cause instanceof Error) {
      return `${e.message}: ${cause.message}`;
    }
    return e.message;
  }
  return String(e);
}

function truncate(text: string): string {
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
