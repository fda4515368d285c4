/** Public API of the policy engine: schema, compiler, evaluator, DNS allowances. Pure: no I/O. */
export {
  type IpAddr,
  type Cidr,
  ipv4,
  ipv6,
  parseIp,
  formatIp,
  parseCidr,
  ipFromBytes,
  ipToBytes,
  writeIp,
  ipEquals,
} from './addr.js';
export {
  PolicyMode,
  RuleAction,
  RuleProtocol,
  Direction,
  type PolicyInput,
  type PolicyRuleInput,
  type Policy,
  type PolicyRule,
  type PolicyProblem,
  type ValidationResult,
  PolicyError,
  PolicyLimits,
  ReservedRuleIds,
  validatePolicy,
  parsePolicy,
  formatProblem,
  normalizeDomainPattern,
} from './schema.js';
export {
  Verdict,
  type Decision,
  type CompiledPolicy,
  DISABLED,
  compile,
  compilePolicy,
  denyAllPolicy,
} from './compile.js';
export {
  type FlowQuery,
  type FlowRecheck,
  type Reevaluation,
  evaluate,
  domainDecision,
  domainAllowed,
  reevaluateFlows,
  nextExpiry,
} from './evaluate.js';
export { DnsAllowances, type DnsAllowancesOptions, DomainMatcher, normalizeName } from './domains.js';
