/**
 * "Check this value": runs the browser's own proof check (verify/check.ts) for one resource
 * version and shows each step as an ordered list with its status in words.
 */
import { useState } from 'preact/hooks';
import type { Session } from '../session.js';
import { plainError } from './notice.js';
import { checkVersion, type CheckResult, type Step, type StepStatus } from '../verify/check.js';
import './verify-panel.css';

const STATUS_TEXT: Record<StepStatus, string> = {
  running: 'Checking…', passed: 'Passed', failed: 'Failed', waiting: 'Not yet', skipped: 'Not checked',
};
const STATUS_BADGE: Record<StepStatus, string> = {
  running: 'badge', passed: 'badge badge-ok', failed: 'badge badge-err', waiting: 'badge badge-warn', skipped: 'badge',
};

export interface VerifyTarget { resourceType: string; id?: string; meta?: { versionId?: string } }

export function VerifyPanel({ session, resource, what }: { session: Session; resource: VerifyTarget; what: string }) {
  const [steps, setSteps] = useState<Step[] | undefined>();
  const [result, setResult] = useState<CheckResult | undefined>();
  const [busy, setBusy] = useState(false);
  if (!resource.id || !resource.meta?.versionId) return null;
  const target = { resourceType: resource.resourceType, id: resource.id, versionId: resource.meta.versionId };

  const run = async () => {
    setBusy(true);
    setResult(undefined);
    try {
      setResult(await checkVersion(target, {
        get: (p) => session.get(p), chainRpcUrl: session.config.chainRpcUrl, describe: plainError, onStep: setSteps,
      }));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="verify">
      <button type="button" class="btn verify-btn" onClick={() => { void run(); }} disabled={busy} aria-expanded={steps !== undefined}>
        {steps ? 'Check again' : 'Check this value'}<span class="visually-hidden">: {what}</span>
      </button>
      {steps && (
        <div class="verify-result" role="region" aria-label={`Check of ${what}`}>
          <p class="verify-title"><strong>Is this value genuine?</strong></p>
          <ol class="steps" aria-live="polite">
            {steps.map((s) => (
              <li key={s.key} data-step={s.key} data-status={s.status}>
                <span class={STATUS_BADGE[s.status]}>{STATUS_TEXT[s.status]}</span>{' '}
                <span class="step-title">{s.title}</span>
                {s.detail && <><br /><small class="step-detail">{s.detail}</small></>}
              </li>
            ))}
          </ol>
          {result && <Verdict result={result} />}
        </div>
      )}
    </div>
  );
}

function Verdict({ result }: { result: CheckResult }) {
  if (result.outcome === 'genuine') {
    return <p class="notice notice-ok verdict" role="status">This value is genuine: it is exactly the value sealed on the chain.</p>;
  }
  if (result.outcome === 'not-anchored') {
    return <p class="notice notice-warn verdict" role="status">This value is not anchored yet, try again in a minute.</p>;
  }
  const failed = result.steps.findIndex((s) => s.status === 'failed');
  return (
    <p class="notice notice-error verdict" role="alert">
      This value could not be confirmed as genuine{failed >= 0 ? `: step ${failed + 1} failed` : ''}. It may have been changed after it was stored.
      Tell your care provider.
    </p>
  );
}
