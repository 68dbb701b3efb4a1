// Loaded (and forgotten) by runner.js before its go, so that the CommonJS loader's code is
// compiled before the run's main.js needs it.
'use strict';
module.exports = { warm: true };
