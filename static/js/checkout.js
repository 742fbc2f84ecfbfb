// Card collection with Stripe.js: confirmCardSetup in the browser, then the
// server charges the card; 3-D Secure runs confirmCardPayment when asked.
(function () {
  var form = document.getElementById("payment-form");
  if (form) {
    var stripe = Stripe(form.dataset.publishableKey);
    var card = stripe.elements().create("card");
    var errors = document.getElementById("card-errors");
    var button = document.getElementById("pay-button");
    card.mount("#card-element");
    card.on("change", function (e) { errors.textContent = (e && e.error) ? e.error.message : ""; });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (button.disabled) return;  // a double click sends one request
      button.disabled = true;
      errors.textContent = "";
      stripe.confirmCardSetup(form.dataset.clientSecret, { payment_method: { card: card } }).then(function (result) {
        if (result.error) {
          errors.textContent = result.error.message || "Your card could not be set up.";
          button.disabled = false;
          return;
        }
        document.getElementById("setup_intent").value = result.setupIntent.id;
        form.submit();
      });
    });
  }
  var actionForm = document.getElementById("action-form");
  if (actionForm) {
    var stripeAction = Stripe(actionForm.dataset.publishableKey);
    stripeAction.confirmCardPayment(actionForm.dataset.actionSecret).then(function () {
      // Success or failure, the server asks Stripe for the outcome.
      actionForm.submit();
    });
  }
})();
