export {
  enroll,
  updateEndpoint,
  updateRoutes,
  fetchDirectory,
  natsUserOptions,
  connectControlPlane,
  endpointOptions,
  learnedUrls,
  splitUrls,
  EnrollError,
  ControlPlaneUnreachableError,
  type ControlPlaneEndpoint,
  type EnrollOptions,
  type Target,
  type NatsUser,
} from './client.js';
export { fetchPinnedCa, CaPinError } from './pin.js';
export { DirectoryWatcher, type DirectoryWatcherOptions, type DirectoryEvents } from './directory.js';
export { controlPlaneEndpoint, saveCredentials, loadCredentials, deleteCredentials, credentialsPath, CredentialsError, type Credentials } from './credentials.js';
export type { EnrollResponse, Peer, RevocationRecord } from '../controlplane/types.js';
export { obtainIdentity, rememberServers, type ObtainIdentityOptions, type ObtainedIdentity } from './identity.js';
