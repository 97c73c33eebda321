import { defineConfig } from "vite";

// The app loads dist/ from disk under a strict CSP (no inline scripts or styles), so asset
// paths must be relative and nothing may be inlined as a data: script.
export default defineConfig({
  base: "./",
  clearScreen: false,
  server: { port: 1420, strictPort: true },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2021",
    sourcemap: false,
    modulePreload: { polyfill: false },
  },
});
