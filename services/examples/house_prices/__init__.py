"""The example regression model: house prices, judged on RMSE and MAE against its champion."""
