import { test, expect } from "appwright";

test("a first-time user can page through onboarding", async ({ device }) => {
  await expect(device.getByText("Welcome to Shopwright")).toBeVisible();
  await device.getByText("Next").tap();
  await expect(device.getByText("Track every order")).toBeVisible();
  await device.getByText("Get started").tap();
  await expect(device.getByText("Sign in")).toBeVisible();
});

test("a first-time user can skip onboarding", async ({ device }) => {
  await device.getByText("Skip").tap();
  await expect(device.getByText("Sign in")).toBeVisible();
});
