// The agent's client of istio.v1.auth.IstioCertificateService: sends a CSR, gets a chain.
import * as grpc from '@grpc/grpc-js';
import { errorFor, IdentityError } from '../errors.js';
import { authMetadata, caService, controlPlaneClient, type ControlPlaneConnection } from '../xds/index.js';

/** Anything that signs a CSR: the control plane's CA over gRPC, or a test double. */
export interface CertificateSigner {
  /** Returns PEM certificates, leaf first. */
  createCertificate(csrPem: string, validitySeconds: number): Promise<string[]>;
}

export class CaClient implements CertificateSigner {
  readonly #conn: ControlPlaneConnection;
  #client: grpc.Client | undefined;

  constructor(conn: ControlPlaneConnection) {
    this.#conn = conn;
  }

  createCertificate(csrPem: string, validitySeconds: number, timeoutMs = 10_000): Promise<string[]> {
    this.#client ??= controlPlaneClient(this.#conn);
    const m = caService.CreateCertificate;
    return new Promise((resolve, reject) => {
      this.#client!.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        { csr: csrPem, validityDuration: validitySeconds },
        authMetadata(this.#conn),
        { deadline: Date.now() + timeoutMs },
        (err, res) => {
          if (err) {
            const code = err.code === grpc.status.UNAUTHENTICATED ? 'NM_ERR_AUTH' : 'NM_ERR_CA';
            reject(errorFor(code, `certificate request to ${this.#conn.address} failed: ${err.details || err.message}`, { cause: err, grpcCode: err.code }));
            return;
          }
          if (!res || res.certChain.length === 0) {
            reject(new IdentityError('NM_ERR_CA', `the CA at ${this.#conn.address} answered with an empty certificate chain`));
            return;
          }
          resolve(res.certChain);
        },
      );
    });
  }

  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }
}
