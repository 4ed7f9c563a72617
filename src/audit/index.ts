export { AuditRecorder, type AuditRecorderOptions } from './recorder.js';
export { AUDIT_SEQUENCE, AUDIT_SEQUENCE_URL, buildAuditEvent, securityFacts, type AuditFacts, type AuditInteraction } from './audit-event.js';
export { accessReportOperation } from './access-report.js';
export { AuditWriterThread } from './writer-thread.js';
