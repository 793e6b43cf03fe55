import { test, expect } from "appwright";

test("a registered user can sign in", async ({ device }) => {
  await device.getByText("Skip").tap();
  await device.getByText("Email").fill("ada@example.com");
  await device.getByText("Password").fill("correct horse battery staple");
  await device.getByText("Sign in").tap();
  await expect(device.getByText("Welcome")).toBeVisible();
});

test("a wrong password is refused with a message", async ({ device }) => {
  await device.getByText("Skip").tap();
  await device.getByText("Email").fill("ada@example.com");
  await device.getByText("Password").fill("wrong password");
  await device.getByText("Sign in").tap();
  await expect(device.getByText("Email or password is incorrect")).toBeVisible();
});
