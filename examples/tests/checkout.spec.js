import { test, expect } from "appwright";

test("a signed-in user can buy a product", async ({ device }) => {
  await device.getByText("Skip").tap();
  await device.getByText("Email").fill("ada@example.com");
  await device.getByText("Password").fill("correct horse battery staple");
  await device.getByText("Sign in").tap();
  await expect(device.getByText("Welcome")).toBeVisible();

  await device.getByText("Search").fill("headphones");
  await device.getByText("Wireless headphones").tap();
  await device.getByText("Add to cart").tap();
  await device.getByText("Cart").tap();
  await device.getByText("Checkout").tap();
  await expect(device.getByText("Order confirmed")).toBeVisible();
});
