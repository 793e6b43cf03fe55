import { defineConfig, Platform } from "appwright";

// qgjob's runner sets QGJOB_BUILD_PATH to the build of the app version under test.
const buildPath = process.env.QGJOB_BUILD_PATH ?? "builds/app.apk";

export default defineConfig({
  testDir: "./tests",
  projects: [
    {
      name: "emulator",
      use: {
        platform: Platform.ANDROID,
        device: { provider: "emulator" },
        buildPath,
      },
    },
    {
      name: "device",
      use: {
        platform: Platform.ANDROID,
        device: { provider: "local-device" },
        buildPath,
      },
    },
    {
      name: "browserstack",
      use: {
        platform: Platform.ANDROID,
        device: {
          provider: "browserstack",
          name: "Google Pixel 8",
          osVersion: "14.0",
        },
        buildPath,
      },
    },
  ],
});
