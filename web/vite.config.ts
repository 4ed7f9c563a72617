import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// Built into dist/web and served by Custos at /portal/ (src/portal). Everything is self-hosted:
// no CDN, no inline script or style, so the server's CSP can forbid both.
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/portal/',
  logLevel: 'warn',
  build: {
    outDir: fileURLToPath(new URL('../dist/web', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 2000,
    rolldownOptions: {
      // fhirclient's isomorphic-webcrypto shim is CommonJS wrapped for Node; the browser uses window.crypto.
      onwarn(warning, warn) { if (warning.code !== 'COMMONJS_VARIABLE_IN_ESM') warn(warning); },
    },
  },
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
});
