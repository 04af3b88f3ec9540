# Terraform and provider versions. azurerm 4.42 is the first release with
# `rbac_authorization_enabled` on Key Vault; nothing here is removed in 5.x.

terraform {
  required_version = ">= 1.5"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.42, < 6.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.12"
    }
  }

  # Keep the state somewhere private and encrypted: it holds the generated
  # secrets (passphrase, JWT secret, admin password, webhook secret), e.g.
  #
  # backend "azurerm" {
  #   resource_group_name  = "tfstate"
  #   storage_account_name = "tfstatexxxx"
  #   container_name       = "tfstate"
  #   key                  = "hangar.tfstate"
  #   use_azuread_auth     = true
  # }
}

provider "azurerm" {
  subscription_id = var.subscription_id
  features {
    key_vault {
      # Never purge the vault on destroy: it holds the passphrase that
      # unseals every secret in Hangar's database (and its backups).
      purge_soft_delete_on_destroy          = false
      purge_soft_deleted_secrets_on_destroy = false
    }
    resource_group {
      # The runner group holds Hangar's VMs: destroying it while runners
      # exist fails instead of deleting them behind Hangar's back.
      prevent_deletion_if_contains_resources = true
    }
  }
}
