# Inputs. Only subscription_id and admin_ssh_public_key have no default;
# terraform.tfvars.example shows a typical set.

variable "subscription_id" {
  description = "Subscription for everything: Hangar's host and the runner VMs."
  type        = string
}

variable "location" {
  description = "Azure region. It must offer the runner flavor (Standard_DC2as_v5: confidential VMs with AMD SEV-SNP) and have quota for it."
  type        = string
  default     = "westeurope"
}

variable "prefix" {
  description = "Prefix of resource names (letters and digits; globally unique names get a random suffix)."
  type        = string
  default     = "hangar"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.prefix))
    error_message = "prefix: 2-12 lowercase letters and digits, starting with a letter."
  }
}

variable "resource_group_name" {
  description = "Resource group for Hangar's host, Key Vault, storage and registry (default: <prefix>)."
  type        = string
  default     = ""
}

variable "runner_resource_group_name" {
  description = "Resource group that holds only the runner VMs and their network; the managed identity's role is scoped to it."
  type        = string
  default     = "hangar-runners"
}

variable "tags" {
  description = "Tags for every resource Terraform makes (Hangar tags its runner VMs itself)."
  type        = map(string)
  default     = {}
}

# --- Hangar's host --------------------------------------------------------

variable "vm_size" {
  description = "Size of the VM that runs hangard. hangard is small; 2 vCPU / 4 GiB is plenty."
  type        = string
  default     = "Standard_B2s"
}

variable "admin_username" {
  description = "Login user of Hangar's VM (SSH key only)."
  type        = string
  default     = "azureuser"
}

variable "admin_ssh_public_key" {
  description = "SSH public key for admin_username on Hangar's VM."
  type        = string
}

variable "admin_source_addresses" {
  description = "CIDRs allowed to SSH to Hangar's VM. Empty: no SSH from the internet (use `az vm run-command`). With database = \"postgres\" the VMs sit behind the load balancer: VM i answers SSH on port 2201 + i of the public IP."
  type        = list(string)
  default     = []
}

variable "data_disk_size_gb" {
  description = "Size of the managed disk that holds the SQLite database and Caddy's certificates (database = \"sqlite\" only)."
  type        = number
  default     = 16
}

variable "data_disk_type" {
  description = "Storage type of that disk (Premium_LRS: low fsync latency; every acknowledged webhook is an fsync)."
  type        = string
  default     = "Premium_LRS"
}

variable "hangar_image" {
  description = "Image to run (built from deploy/Dockerfile). Empty: <registry>/hangar:<hangar_image_tag> in the registry made here."
  type        = string
  default     = ""
}

variable "hangar_image_tag" {
  description = "Tag of the hangar image in the registry made here. Prefer an immutable tag (a version or commit)."
  type        = string
  default     = "latest"
}

variable "create_registry" {
  description = "Make an Azure Container Registry the VM pulls from with its managed identity. false: hangar_image must be pullable without credentials."
  type        = bool
  default     = true
}

variable "proxy_image" {
  description = "Caddy image that terminates TLS (Let's Encrypt) in front of hangard."
  type        = string
  default     = "docker.io/library/caddy:2"
}

variable "public_hostname" {
  description = "Public DNS name of Hangar, when you point your own name at the public IP. Empty: the Azure name <label>.<location>.cloudapp.azure.com."
  type        = string
  default     = ""
}

variable "hangar_address_space" {
  description = "Address space of the VNet of Hangar's VM."
  type        = string
  default     = "10.40.0.0/24"
}

# --- Runners --------------------------------------------------------------

variable "provider_name" {
  description = "Name of the [[provider]] in hangard.toml; pools refer to it (pool add --provider-name)."
  type        = string
  default     = "azure-cvm"
}

variable "runner_address_space" {
  description = "Address space of the runner VNet; the runner subnet takes all of it."
  type        = string
  default     = "10.41.0.0/20"
}

variable "runner_nat_gateway" {
  description = "Give the runner subnet a NAT gateway (runners have no public IP and need outbound access to GitHub and Hangar). false: rely on Azure's default outbound access, which new VNets no longer get."
  type        = bool
  default     = true
}

variable "runner_public_ip" {
  description = "provider.azure.public_ip: give each runner VM a public IP (not needed with the NAT gateway)."
  type        = bool
  default     = false
}

variable "runner_admin_username" {
  description = "provider.azure.admin_username on the runner VMs."
  type        = string
  default     = "runner"
}

variable "runner_ssh_public_key" {
  description = "Optional SSH public key installed on runner VMs (provider.azure.ssh_public_key_file). Password login is always disabled."
  type        = string
  default     = ""
}

variable "runner_max_concurrency" {
  description = "provider.azure.max_concurrency: Azure calls at once."
  type        = number
  default     = 4
}

variable "extra_runner_role_actions" {
  description = "Actions to add to the runner role, should a provider version need more than the listed ones."
  type        = list(string)
  default     = []
}

# --- Secrets and state ----------------------------------------------------

variable "github_pat" {
  description = "Optional: GitHub PAT stored in Key Vault as `github-pat` for first-run.sh. Leave empty and `az keyvault secret set` it to keep it out of the Terraform state."
  type        = string
  default     = ""
  sensitive   = true
}

variable "github_app_private_key" {
  description = "Optional: PEM key of a GitHub App, stored in Key Vault as `github-app-private-key` (same trade-off as github_pat)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "key_vault_purge_protection" {
  description = "Purge protection on the Key Vault: a deleted passphrase stays recoverable for the retention period, whoever deleted it."
  type        = bool
  default     = true
}

variable "storage_replication_type" {
  description = "Replication of the backup storage account (ZRS, GRS, GZRS, LRS)."
  type        = string
  default     = "ZRS"
}

variable "backup_retention_days" {
  description = "Database backups (hourly) older than this are deleted."
  type        = number
  default     = 30
}

# --- Several replicas on Azure Database for PostgreSQL -----------------------

variable "database" {
  description = "\"sqlite\": one VM, its database on a managed data disk, hourly backups to Blob storage. \"postgres\": an Azure Database for PostgreSQL flexible server, host_count VMs behind a load balancer, every one a hangard replica (README.md: Several replicas)."
  type        = string
  default     = "sqlite"

  validation {
    condition     = contains(["sqlite", "postgres"], var.database)
    error_message = "database: \"sqlite\" or \"postgres\"."
  }
}

variable "host_count" {
  description = "VMs running hangard. 1 with database = \"sqlite\" (SQLite has one writer); 1 to 3 with \"postgres\", spread over availability zones."
  type        = number
  default     = 1

  validation {
    condition     = var.host_count >= 1 && var.host_count <= 3 && floor(var.host_count) == var.host_count
    error_message = "host_count: 1, 2 or 3."
  }
}

variable "host_zones" {
  description = "Availability zones for the hangard VMs with database = \"postgres\", used in turn (VM i goes to host_zones[i % length]). Empty: no zones (regions without them)."
  type        = list(string)
  default     = ["1", "2", "3"]
}

variable "postgres_version" {
  description = "PostgreSQL major version of the flexible server (Hangar needs 15 or later)."
  type        = string
  default     = "16"
}

variable "postgres_sku" {
  description = "Flexible server SKU. Zone-redundant high availability needs General Purpose or Memory Optimized (GP_…, MO_…), not Burstable."
  type        = string
  default     = "GP_Standard_D2ds_v5"
}

variable "postgres_storage_mb" {
  description = "Flexible server storage in MiB (Hangar's database is small; storage also sets the disk's IOPS)."
  type        = number
  default     = 32768
}

variable "postgres_high_availability" {
  description = "Zone-redundant high availability: a standby in another zone takes over when the primary's zone fails (Azure's failover is usually 60-120 s; hangard replicas reconnect by themselves)."
  type        = bool
  default     = true
}

variable "postgres_zone" {
  description = "Zone of the primary (and, with high availability, postgres_standby_zone of the standby). Empty: Azure picks."
  type        = string
  default     = "1"
}

variable "postgres_standby_zone" {
  description = "Zone of the high-availability standby."
  type        = string
  default     = "2"
}

variable "postgres_backup_retention_days" {
  description = "Point-in-time restore window of the flexible server, in days (7-35). Replaces the SQLite deployment's hourly Blob backups."
  type        = number
  default     = 14
}

variable "postgres_geo_redundant_backup" {
  description = "Keep the flexible server's backups in the paired region as well."
  type        = bool
  default     = false
}

variable "postgres_address_space" {
  description = "Subnet delegated to the flexible server (private access only: no public endpoint). Added to the host VNet."
  type        = string
  default     = "10.40.1.0/24"
}
