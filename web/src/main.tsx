import { render } from 'preact';
import './styles.css';
import { loadConfig } from './config.js';
import { App, Booting, SignInPage } from './app.js';
import { resumeSession } from './session.js';

async function boot(root: HTMLElement): Promise<void> {
  render(<Booting />, root);
  let config;
  try {
    config = await loadConfig();
  } catch (err) {
    render(<main id="main"><h1>Your health record</h1><p class="notice notice-error" role="alert">{(err as Error).message}</p></main>, root);
    return;
  }
  try {
    const session = await resumeSession(config);
    render(session ? <App session={session} /> : <SignInPage config={config} />, root);
  } catch (err) {
    render(<SignInPage config={config} error={err} />, root);
  }
}

void boot(document.getElementById('app')!);
